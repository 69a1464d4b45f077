from localq.cli import main

main()
