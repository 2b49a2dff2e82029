import sys

try:
    from blindcheck.cli import main
except KeyboardInterrupt:  # Ctrl-C before the CLI could install its handlers
    sys.exit(130)

sys.exit(main())
