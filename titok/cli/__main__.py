import sys

from titok.cli import main

sys.exit(main())
