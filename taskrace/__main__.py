import sys

from taskrace.cli import main

sys.exit(main())
