"""ttpsensor on Windows: the .msi's entry point, run by the target's Python 3.12.

The sensor's packages are in ``site-packages`` beside this file; the service (NSSM) runs
``python.exe -I ttpsensor.py windows run ...``, and a console can run any other command the
same way (``py -3.12 -I "C:\\Program Files\\ttpsensor\\ttpsensor.py" pe FILE``).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages"))
from common.cli import main  # noqa: E402

sys.exit(main())
