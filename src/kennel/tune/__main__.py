"""``python -m kennel.tune STUDY_DIR --index I``: one tuning worker, as ``kennel tune --parallel K`` starts them."""

import sys

from kennel.tune.worker import main

sys.exit(main())
