"""A synthetic DR10-South-like survey: Phase 3 tables, coadd FITS files and an HTTP server for them."""
