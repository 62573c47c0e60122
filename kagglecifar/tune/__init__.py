"""`tune`: an Optuna search whose trials are resumable runs (search), what it varies (space, spaces/*.yaml),
the study database (storage) and its plots."""
