from reel.cli import main

main()
