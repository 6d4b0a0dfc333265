"""The model worker's job handlers, one module per job kind (app.job_kinds lists them). Worker process only."""
