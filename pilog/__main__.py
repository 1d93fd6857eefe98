from pilog.cli.app import main

main()
