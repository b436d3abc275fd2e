"""Engine-agnostic batch functions (Arrow in, Arrow out). No Dagster imports.

The same functions run in-process, in a process pool and inside Spark executors.
"""
