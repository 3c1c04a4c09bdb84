"""The web app (`tweetlm serve`): import, train and generate in the browser, built with Gradio.

`app` holds what the page's actions do (library calls, no Gradio), `jobs` the training queue,
`views` the HTML of each panel, and `ui` the Gradio page and the server.
"""
