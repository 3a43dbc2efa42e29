import sys

from rerank_pipeline.cli import main

sys.exit(main())
