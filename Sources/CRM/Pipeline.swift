import Foundation
import ReplicaStore
import SyncModel

/// One stage of a tenant's sales pipeline. A tenant configures its pipeline as
/// `pipeline_stage` records, so devices know it offline and check stages as the server does.
public struct PipelineStage: Sendable, Hashable, Codable {
    public var name: String
    /// Where the stage sits in the pipeline; lower comes first.
    public var position: Int
    /// The probability (percent) an opportunity takes when it enters the stage.
    public var probability: Int
    public var isClosed: Bool
    public var isWon: Bool

    public init(name: String, position: Int, probability: Int, isClosed: Bool = false, isWon: Bool = false) {
        self.name = name
        self.position = position
        self.probability = probability
        self.isClosed = isClosed
        self.isWon = isWon
    }

    /// The pipeline of a tenant that has configured none, so that a new tenant can work at once.
    public static let defaultPipeline: [PipelineStage] = [
        PipelineStage(name: "prospecting", position: 1, probability: 10),
        PipelineStage(name: "qualification", position: 2, probability: 25),
        PipelineStage(name: "proposal", position: 3, probability: 50),
        PipelineStage(name: "negotiation", position: 4, probability: 75),
        PipelineStage(name: "closed_won", position: 5, probability: 100, isClosed: true, isWon: true),
        PipelineStage(name: "closed_lost", position: 6, probability: 0, isClosed: true),
    ]

    /// The tenant's pipeline, in position order: its `pipeline_stage` records, or the default
    /// pipeline when it has none. Kept by the store until a stage record changes.
    public static func pipeline(in store: RecordLookup) throws -> [PipelineStage] {
        try store.cached("crm.pipeline") {
            let stages = try store.records(ofType: "pipeline_stage").compactMap { record -> PipelineStage? in
                let values = record.values
                guard case .text(let name)? = values["name"], case .integer(let position)? = values["position"],
                      case .integer(let probability)? = values["probability"] else { return nil }
                return PipelineStage(name: name, position: Int(position), probability: Int(probability),
                                     isClosed: values["closed"] == .bool(true), isWon: values["won"] == .bool(true))
            }
            // Ties (two admins adding a stage at the same position offline) sort by name, so
            // every replica lists the same order.
            return stages.isEmpty ? defaultPipeline : stages.sorted { ($0.position, $0.name) < ($1.position, $1.name) }
        }
    }
}
