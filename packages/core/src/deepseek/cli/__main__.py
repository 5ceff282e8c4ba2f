import sys

from deepseek.cli import main

sys.exit(main())
