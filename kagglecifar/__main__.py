from kagglecifar.cli import main

if __name__ == "__main__":  # `train --processes` spawns workers, which import the main module again
    main()
