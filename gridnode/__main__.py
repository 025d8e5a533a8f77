import sys

from gridnode.cli import main

sys.exit(main())
