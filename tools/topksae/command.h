// Subcommand registry: each cmd_<name>.cpp defines a static CommandRegistration that adds its
// subcommand to the CLI11 app, so main.cpp never lists them.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

namespace topksae::cli {

using Registrar = std::function<void(CLI::App& app)>;
std::vector<Registrar>& registrars();

struct CommandRegistration {
  explicit CommandRegistration(Registrar r) { registrars().push_back(std::move(r)); }
};

}  // namespace topksae::cli
