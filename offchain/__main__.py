"""``python -m offchain``: the command line."""

from offchain.cli.main import main

if __name__ == "__main__":
    main()
