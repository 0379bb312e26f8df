import sys

from kubeharden.catalogue import main

sys.exit(main())
