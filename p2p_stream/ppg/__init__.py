"""Signal: resampling, band-pass and the quality gate — one path shared by training, evaluation and the daemon."""
