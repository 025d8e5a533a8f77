"""The status page's static files (index.html, app.js, style.css), served by :mod:`gridnode.api`.

A package only so that the files ship as package data.
"""
