"""From records to answers: runs as frames, the measures and the matched-progress
comparison, the rules and the claims table, the plots, and the notebooks' HTML report.
Imports pipeline.core only (no framework: it reads records)."""
