"""The HTTP side: mailer serve's routes and limits, pages, the preview server."""
