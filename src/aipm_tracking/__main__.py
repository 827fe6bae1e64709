"""``python -m aipm_tracking`` runs the CLI."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main()
