from webhook_app.tools.cli import main

main()
