// topksae: train, encode, decode, evaluate and inspect TopK SAEs (sae_lens-compatible files).
#include <iostream>

#include "command.h"
#include "topksae/error.h"

namespace topksae::cli {
std::vector<Registrar>& registrars() {
  static std::vector<Registrar> r;
  return r;
}
}  // namespace topksae::cli

int main(int argc, char** argv) {
  CLI::App app{"topksae: TopK sparse autoencoders on language-model activations, without an ML framework"};
  app.require_subcommand(1);
  for (auto& reg : topksae::cli::registrars()) reg(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const topksae::Error& e) {
    std::cerr << "topksae: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "topksae: unexpected error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
