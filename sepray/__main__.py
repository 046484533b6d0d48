import sys

from sepray.cli import main

sys.exit(main())
