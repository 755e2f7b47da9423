import sys

from versemi.cli import main

sys.exit(main())
