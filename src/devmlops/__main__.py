from devmlops.cli import main

main()
