from novulite.cli import main

main()
