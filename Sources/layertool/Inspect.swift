import ArgumentParser
import Foundation
import LayerKit

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read layers and print their digests, sizes and entry counts, writing nothing.",
        discussion: "Each LAYER is a file or - for standard input. The whole layer is read, so corrupt data is found."
    )

    @Flag(help: "Print the results as JSON.")
    var json = false

    @Argument(help: ArgumentHelp("Layers to read.", valueName: "LAYER"))
    var layers: [String]

    func run() throws {
        var summaries = [LayerSummary]()
        do throws(LayerError) {
            for p in layers {
                let source: LayerSource = p == "-" ? .fileDescriptor(0) : .path(p)
                summaries.append(try LayerApplier(options: ToolEnvironment.applyOptions()).inspect(source, name: p, validate: true))
            }
        } catch {
            throw fail(error)
        }
        if json {
            print(Output.json(Output.records(summaries, names: layers)))
        } else {
            for (s, n) in zip(summaries, layers) { print(Output.human(s, name: n)) }
        }
    }
}
