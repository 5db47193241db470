"""`mailer console` (issue 23): the marketer's pages, server-rendered, each also JSON.

    auth     password hashes, MAILER_CONSOLE_USERS, session cookies, form tokens, throttle
    guard    the middlewares: session required, CSRF on every POST, security headers
    data     each page's document (the JSON a page answers with ?format=json)
    pages    the handlers, the templates' filters (store.locale), the routes
    server   the aiohttp application on mailer.web.listener

docs/console.md is the user's guide.
"""
