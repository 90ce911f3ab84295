import ArgumentParser

@main
struct Portcullis: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reverse-proxy authentication gateway")
    func run() throws {}
}
