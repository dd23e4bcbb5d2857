from rnnembed.cli import main

main()
