import sys

from modeldeck.core.cli import main

sys.exit(main())
