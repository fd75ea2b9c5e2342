from tfbuild.cli import run

run()
