from sxpm.cli.main import main

main()
