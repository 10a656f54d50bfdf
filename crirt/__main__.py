import sys

from crirt.cli import main

sys.exit(main())
