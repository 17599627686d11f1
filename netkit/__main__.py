"""`python -m netkit ...`: the netkit command, for environments without the console script."""
import sys

from .tools.cli import main

sys.exit(main())
