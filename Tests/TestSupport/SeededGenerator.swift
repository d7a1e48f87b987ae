// The generator lives in SyncModel, where the fuzz targets' mutation runs use it too; tests
// keep finding it here.
@_exported import struct SyncModel.SeededGenerator
