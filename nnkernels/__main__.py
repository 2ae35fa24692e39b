"""``python -m nnkernels {bench,info,check}``: see ``nnkernels._cli``."""

import sys

from nnkernels._cli import main

sys.exit(main())
