"""The monthly review for the store owner (`mailer review`, docs/surveys.md): `monthly`
gathers a month's figures, `page` writes them as one HTML page (the notice's body too)."""
