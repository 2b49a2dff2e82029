import sys

from blindcheck.cli import main

sys.exit(main())
