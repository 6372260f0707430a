from magsag.cli import main

main()
