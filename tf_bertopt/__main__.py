import sys

from tf_bertopt.cli import main

sys.exit(main())
