from kagglecifar.cli import main

main()
