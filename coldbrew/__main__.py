from coldbrew.cli import main

main()
