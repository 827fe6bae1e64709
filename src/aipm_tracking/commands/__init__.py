"""One module per CLI command family; each imports its heavy work inside the command body."""
