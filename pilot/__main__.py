from pilot.cli import main

main()
