"""Versions of the libraries the generated code names (build files, READMEs, Package.swift).

A file of its own because it is an input of every loader: tfbuild hashes it into the loader key
(tfbuild.loaders.template_files), so raising a version re-renders the loaders and the outputs
recorded in tfbuild.lock change with it. docs/mobile.md says where each version was checked.
"""

VERSIONS = {
    "litert": "2.1.0",               # Android: com.google.ai.edge.litert:litert (CompiledModel)
    # iOS: the github.com/google-ai-edge/LiteRT Swift package, release v2.2.0, pinned by its commit
    # (the tag's): LiteRT's manifest has unsafe linker flags, and SwiftPM refuses those from a
    # dependency resolved by version (from:/exact:), never from one pinned to a revision.
    "litert_swift": "2.2.0",
    "litert_swift_revision": "145c7523ff08d5e57ab5c582141775eea47da9c7",
    "litert_classic": "1.4.0",
    "tensorflow_lite": "2.16.1",
    "tensorflow_lite_swift": "2.17.0",
    "androidx_test_junit": "1.2.1",
    "androidx_test_runner": "1.6.2",
    "junit": "4.13.2",
    # MediaPipe Tasks, shown in the READMEs of targets with TFLite metadata: Android
    # com.google.mediapipe:tasks-vision and the iOS pod MediaPipeTasksVision
    "mediapipe_tasks_vision": "0.10.21",
}
