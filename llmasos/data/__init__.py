"""Each app's data: files, vector stores with hybrid search, and a key-value store.

Every app has its own SQLite database under `$LLMASOS_HOME/data/`, opened from the `App` the kernel
authenticated (`AppData.of(app)`), never from anything a request names: no call can reach another
app's rows, and deleting an app deletes its folder.
"""
