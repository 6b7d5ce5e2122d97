#!/usr/bin/env python
"""Compare single-task training, static weights and combiners on one mixture over seeds (Δm, ranks, plots).

    python recipes/compare.py recipes/configs/compare_text.yaml [--output_dir DIR] [--shard i/n] [--report-only]

The same as ``hf-mtl compare CONFIG``; the code lives in :mod:`hf_mtl.recipes.compare` and :mod:`hf_mtl.compare`.
"""

import sys

from hf_mtl.recipes.compare import main

if __name__ == "__main__":
    sys.exit(main())
