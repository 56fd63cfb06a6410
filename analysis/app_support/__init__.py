"""What an interactive front end needs beyond the library: serving policy, uploads, loading, plan-editor previews."""
