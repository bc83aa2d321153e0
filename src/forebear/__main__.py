from forebear.cli import run

run()
