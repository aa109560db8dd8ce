"""``python -m ldm_np.exercises ...``: build, grade and list the exercises."""

import sys

from . import main

sys.exit(main())
