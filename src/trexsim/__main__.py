from trexsim.cli import app

app()
